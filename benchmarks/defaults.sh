#!/usr/bin/env bash
# A practitioner's first run: `hlrm train --model M --data FILE` with no other option, for each
# model, on files read as a user would (no core filter, the default split). Prints one line per
# model: model, test NDCG@10 on all test users, seconds. docs/results.md ("Defaults") quotes it.
#   bash benchmarks/defaults.sh ../shared/data/ml-100k/u.data.xz movielens popularity cml
set -euo pipefail
file=$1
format=$2
shift 2
out=$(mktemp -d)
for model in "$@"; do
    started=$(date +%s)
    if hlrm train --model "$model" --data "$file" --format "$format" --run-dir "$out/$model" \
        --quiet > "$out/$model.log" 2>&1; then
        ndcg=$(python -c "import json,sys; print(round(json.load(open(sys.argv[1]))['ndcg@10'], 4))" \
            "$out/$model/metrics.json")
    else
        ndcg="failed: $(tail -n 1 "$out/$model.log")"
    fi
    echo "$(basename "$file") $model ndcg@10=$ndcg seconds=$(( $(date +%s) - started ))"
done
grep -h "^note:" "$out"/*.log | sort -u || true
