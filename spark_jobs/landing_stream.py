"""spark-submit entry point of `freshrec.spark.landing_stream` (the job lives in the package; this file only runs it):

    spark-submit spark_jobs/landing_stream.py ...      or      python -m spark_jobs.landing_stream ...
"""

from freshrec.spark.landing_stream import main

if __name__ == "__main__":
    main()
