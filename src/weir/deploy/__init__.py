"""Deployment to Amazon EMR (docs/deploy.md): the package, the submission, the run status, and
the AWS resource definitions under deploy/ generated from the one configuration and schema.

One module per concern: :mod:`weir.deploy.package` (`weir package`),
:mod:`weir.deploy.submit` (`weir emr submit`: the spark-submit command line, the EMR step and
the EMR Serverless job run), :mod:`weir.deploy.status` (`weir emr status`) and
:mod:`weir.deploy.resources` (IAM policies, the CloudFormation template, QuickSight).
"""
