"""spark-submit entry point of `freshrec.spark.training_input` (the job lives in the package; this file only runs it):

    spark-submit spark_jobs/training_input.py ...      or      python -m spark_jobs.training_input ...
"""

from freshrec.spark.training_input import main

if __name__ == "__main__":
    main()
