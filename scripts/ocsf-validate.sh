#!/usr/bin/env bash
# Validates OCSF records (one JSON object per line, in FILE...) against the
# OCSF 1.8.0 JSON Schema of File System Activity (file_activity) with the
# host and container profiles, as the ocsf-json-schema package generates
# it, with jsonschema's Draft202012Validator. Both packages are installed
# from the package registry into a venv under the cache directory
# (FANAUDIT_OCSF_VENV, default ~/.cache/fanaudit/ocsf-venv), once.
# Prints one line per invalid record and exits 1 if there is any; exits 3
# when python3 or its venv module is missing.
set -euo pipefail
venv="${FANAUDIT_OCSF_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fanaudit/ocsf-venv}"
command -v python3 >/dev/null 2>&1 || { echo "ocsf-validate: python3 not found" >&2; exit 3; }
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import ocsf_json_schema, jsonschema' 2>/dev/null; then
	rm -rf "$venv"
	mkdir -p "$(dirname "$venv")"
	python3 -m venv "$venv" >/dev/null 2>&1 || { echo "ocsf-validate: python3 -m venv failed (install python3-venv)" >&2; rm -rf "$venv"; exit 3; }
	"$venv/bin/pip" install -q --disable-pip-version-check 'ocsf-json-schema==1.2.0' 'jsonschema==4.26.0' >&2
fi
exec "$venv/bin/python" - "$@" <<'PY'
import json, sys
from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema
schema = OcsfJsonSchemaEmbedded(get_ocsf_schema(version="1.8.0")).get_class_schema(
    "file_activity", profiles=["host", "container"])
Draft202012Validator.check_schema(schema)
v = Draft202012Validator(schema)
bad = n = 0
for path in sys.argv[1:]:
    with open(path) as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            rec = json.loads(line)
            for err in v.iter_errors(rec):
                bad += 1
                where = "/".join(str(p) for p in err.absolute_path)
                print("%s:%d: /%s: %s" % (path, i, where, err.message))
print("ocsf-validate: %d records, %d errors" % (n, bad), file=sys.stderr)
sys.exit(1 if bad else 0)
PY
