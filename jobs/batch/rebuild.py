"""spark-submit entry point of the batch layer; `weir batch rebuild` runs the same code.

    spark-submit jobs/batch/rebuild.py --conf conf/emr.yaml [--cutoff 2026-03-01T10:00:00Z]
        [--from 2026-02-27 --to 2026-02-28 | --full] [--input s3://bucket/firehose/prefix]

Exit codes (DESIGN.md §8): 0 success, 1 a failed run (recorded in _control/batch_runs),
2 bad arguments or configuration (nothing written).
"""

import argparse
import logging
import sys

from weir.config import DEFAULT_CONF_PATH, ConfigError, load_config
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.layers.batch import rebuild_batch, rebuild_request
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Rebuild the batch view from the raw zone.")
    parser.add_argument("--conf", default=DEFAULT_CONF_PATH)
    parser.add_argument("--cutoff")
    parser.add_argument("--from", dest="date_from")
    parser.add_argument("--to", dest="date_to")
    parser.add_argument("--full", action="store_true")
    parser.add_argument("--input", dest="input_path", help="raw JSON-lines files to adopt first")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.conf)
        request = rebuild_request(
            args.cutoff, args.date_from, args.date_to, args.full, input_path=args.input_path
        )
        rebuild_batch(build_session(config, app_name="weir-batch-rebuild"), config, request)
    except ConfigError as error:
        logging.error("configuration error %s", error)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        logging.error("failed %s", error)
        return EXIT_RUNTIME_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
