#!/bin/sh
# Rebuild this report. Run from anywhere: paths are relative to this directory.
cd "$(dirname "$0")" || exit 1

# The comparison as it was invoked:
#   hlrm compare --config configs/compare/recipes-yelp-diffnet.toml --out reports/recipes-yelp-diffnet
# Rebuild the tables and plots (finished runs under runs/ are reused):
hlrm compare --config compare.toml --out .

# Or train every run on its own, from its stored configuration, into a fresh directory:
# hlrm train --config runs/popularity/config.toml --run-dir rebuilt/popularity
# hlrm train --config runs/itemknn/config.toml --run-dir rebuilt/itemknn
# hlrm train --config runs/ease/config.toml --run-dir rebuilt/ease
# hlrm train --config runs/als/config.toml --run-dir rebuilt/als
# hlrm train --config runs/bpr/config.toml --run-dir rebuilt/bpr
# hlrm train --config runs/cml-paper/config.toml --run-dir rebuilt/cml-paper
# hlrm train --config runs/cml/config.toml --run-dir rebuilt/cml
# hlrm train --config runs/cml-ease/config.toml --run-dir rebuilt/cml-ease
