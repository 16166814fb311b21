"""spark-submit entry point of the serving layer; `weir merge` runs the same code.

    spark-submit jobs/merge/merge.py --conf conf/emr.yaml

Publishes the unified telemetry_minute table (BATCH up to the horizon, SPEED beyond) in one
Delta commit, or none when nothing changed; the run is recorded in _control/merge_runs.
Exit codes (DESIGN.md §8): 0 success, 1 a failed merge (recorded), 2 bad configuration.
"""

import argparse
import logging
import sys

from weir.config import DEFAULT_CONF_PATH, ConfigError, load_config
from weir.errors import EXIT_BAD_CONFIG, EXIT_OK, EXIT_RUNTIME_FAILURE, WeirError
from weir.layers.serving import run_merge
from weir.spark import build_session


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(description="Merge BATCH and SPEED into telemetry_minute.")
    parser.add_argument("--conf", default=DEFAULT_CONF_PATH)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        config = load_config(args.conf)
        run_merge(build_session(config, app_name="weir-merge"), config)
    except ConfigError as error:
        logging.error("configuration error %s", error)
        return EXIT_BAD_CONFIG
    except WeirError as error:
        logging.error("failed %s", error)
        return EXIT_RUNTIME_FAILURE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
