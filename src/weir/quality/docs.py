"""Publishing the Data Docs site to the lake, ``file://`` or ``s3://`` alike.

Great Expectations writes its static site to a local folder; Hadoop's FileSystem (the one
Spark already has, with S3 support on EMR and through s3a locally) copies it to
``dq/docs/`` under the lake root. No second S3 client and no credentials of GX's own: the
site lands wherever the tables land, by the same configuration.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession


def publish_site(spark: SparkSession, site: Path, target: str) -> str:
    """Replace the folder ``target`` with a copy of the local folder ``site``; returns the
    URI of the copied ``index.html``. Readers may see a partial site while it is copied."""
    jvm = spark.sparkContext._jvm
    hadoop_path = jvm.org.apache.hadoop.fs.Path
    destination = hadoop_path(target)
    filesystem = destination.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    filesystem.delete(destination, True)
    # With the destination gone, the copy of a folder becomes the destination itself.
    filesystem.copyFromLocalFile(False, True, hadoop_path(site.resolve().as_uri()), destination)
    return f"{target.rstrip('/')}/index.html"
