"""`python -m freshrec.cli` = the `freshrec` command (for machines where the console script is not on PATH)."""

from freshrec.cli import main

main()
