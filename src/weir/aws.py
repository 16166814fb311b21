"""boto3 clients for the AWS endpoint the configuration names: AWS itself, or a local one.

Every AWS call Weir makes (Kinesis, S3, Glue, EMR, EMR Serverless) gets its client here.
Which endpoint answers is configuration (``aws.endpoint_url``, and per source
``sources.kinesis.endpoint_url``), never a branch in the code: on AWS the keys are null and
boto3's default endpoints and credential chain apply; locally they point at the moto server
of `weir infra up` (``weir.infra.aws``).
"""

from __future__ import annotations

from typing import Any, Optional
from urllib.parse import urlparse

from weir.config import WeirConfig

# A local endpoint accepts any credentials; these are used only when the config names none,
# so boto3 never goes looking for real ones to send to 127.0.0.1.
LOCAL_CREDENTIALS = ("testing", "testing")


def aws_client(
    config: WeirConfig, service: str, *, endpoint_url: Optional[str] = None, **options: Any
) -> Any:
    """A boto3 client for ``service`` at the configured endpoint, region and credentials.

    ``aws.endpoint_url`` (one endpoint for every service) unless ``endpoint_url`` is given;
    with no endpoint at all, boto3's default AWS endpoints and credential chain apply.
    ``options`` go to :class:`botocore.config.Config` (timeouts, retries).
    """
    import boto3
    from botocore.config import Config

    endpoint = endpoint_url or config.aws.endpoint_url
    key, secret = config.aws.access_key_id, config.aws.secret_access_key
    if endpoint is not None and key is None:
        key, secret = LOCAL_CREDENTIALS
    region = config.sources.kinesis.region if service == "kinesis" else config.aws.region
    return boto3.client(
        service,
        region_name=region,
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        config=Config(**options) if options else None,
    )


def lake_bucket(config: WeirConfig) -> Optional[str]:
    """The bucket of ``lake.root`` when it is on S3 (s3:// or s3a://), else None."""
    root = urlparse(config.lake.root)
    return root.netloc if root.scheme in ("s3", "s3a") else None


__all__ = ["LOCAL_CREDENTIALS", "aws_client", "lake_bucket"]
