#!/usr/bin/env python3
"""Parses a Prometheus text exposition from stdin with the reference parser
(prometheus_client.parser.text_string_to_metric_families) and prints it as JSON:

    {"families": {FAMILY: {"type": TYPE, "help": HELP}},
     "samples": {SAMPLE_NAME: [[{LABEL: VALUE}, VALUE], ...]}}

The parser raises on malformed input, which makes this script exit non-zero.
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    text = sys.stdin.read()
    families = {}
    samples = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {"type": family.type, "help": family.documentation}
        for sample in family.samples:
            samples.setdefault(sample.name, []).append([dict(sample.labels), sample.value])
    json.dump({"families": families, "samples": samples}, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
