"""spark-submit entry point of `freshrec.spark.features` (the job lives in the package; this file only runs it):

    spark-submit spark_jobs/features.py ...      or      python -m spark_jobs.features ...
"""

from freshrec.spark.features import main

if __name__ == "__main__":
    main()
