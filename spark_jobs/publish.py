"""spark-submit entry point of `freshrec.spark.publish` (the job lives in the package; this file only runs it):

    spark-submit spark_jobs/publish.py ...      or      python -m spark_jobs.publish ...
"""

from freshrec.spark.publish import main

if __name__ == "__main__":
    main()
