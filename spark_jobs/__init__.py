"""spark-submit entry scripts; the jobs themselves are the package freshrec.spark (installed with FreshRec)."""
