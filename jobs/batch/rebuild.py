"""spark-submit entry point of the batch layer; `weir batch rebuild` runs the same code.

    spark-submit jobs/batch/rebuild.py --conf conf/emr.yaml [--cutoff 2026-03-01T10:00:00Z]
        [--from 2026-02-27 --to 2026-02-28 | --full] [--input s3://bucket/firehose/prefix]

Exit codes: 0 success, 1 a failed run (recorded in _control/batch_runs), 2 bad arguments or
configuration (nothing written).
"""

import argparse
import sys

from weir.config import load_config
from weir.entry import conf_argument, run_job
from weir.layers.batch import rebuild_batch, rebuild_request
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the batch view from the raw zone.")
    conf_argument(parser)
    parser.add_argument("--cutoff", help="ISO-8601 instant; default now floored to the hour")
    parser.add_argument("--from", dest="date_from", help="first event date to rebuild")
    parser.add_argument("--to", dest="date_to", help="last event date to rebuild")
    parser.add_argument("--full", action="store_true", help="rebuild every date")
    parser.add_argument("--input", dest="input_path", help="raw JSON-lines files to adopt first")
    args = parser.parse_args(argv)

    def rebuild() -> None:
        config = load_config(args.conf)
        request = rebuild_request(
            args.cutoff, args.date_from, args.date_to, args.full, input_path=args.input_path
        )
        rebuild_batch(build_session(config, app_name="weir-batch-rebuild"), config, request)

    return run_job(rebuild)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
