"""A kubectl exec credential plugin for the tests: prints an ExecCredential whose token is the
content of TOKEN_FILE, expiring in TTL seconds, and appends a line to COUNT_FILE per run.

    python k8s_exec_plugin.py TOKEN_FILE COUNT_FILE TTL
"""

import datetime
import json
import os
import sys

token_file, count_file, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
info = json.loads(os.environ.get("KUBERNETES_EXEC_INFO", "{}"))  # what kubectl also passes
with open(count_file, "a") as f:
    f.write(info.get("apiVersion", "?") + "\n")
expiry = datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=ttl)
with open(token_file) as f:
    token = f.read().strip()
print(json.dumps({
    "apiVersion": "client.authentication.k8s.io/v1", "kind": "ExecCredential",
    "status": {"token": token, "expirationTimestamp": expiry.strftime("%Y-%m-%dT%H:%M:%SZ")},
}))
