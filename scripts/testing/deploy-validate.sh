#!/usr/bin/env bash
# Checks the deploy/ files that no test runs, offline and without a Docker engine:
#
# - deploy/k8s/*.yaml against the Kubernetes OpenAPI schemas that the PyPI package
#   kubernetes-validate ships (strict: an unknown or misspelled field fails, as does
#   a wrong type), for the oldest Kubernetes the manifests need (1.31: StatefulSet
#   `ordinals` and the pod-index label are stable there) and the newest the package
#   knows; then the cross-references no schema sees (selectors, the governing
#   Service, the ConfigMap, the peer list against the replica count, the
#   credentials: read from files of a read-only Secret volume of mode 0400, never
#   from environment values). The package
#   goes into a virtualenv under target/ (K8S_VALIDATE_VENV), installed once from
#   PyPI; after that no network is needed.
# - deploy/systemd/broker.service with `systemd-analyze verify`, in a scratch root
#   (any warning fails), when systemd-analyze is installed.
# - deploy/docker-compose.yml with `docker-compose config` (`docker compose`), when
#   Compose is installed, and its security: every node reads the cluster secret
#   and admin token from Compose secrets by path, none has them in its environment.
# - deploy/prometheus/prometheus.yml: the broker job authorizes with a bearer
#   token from a credentials file (GET /metrics needs admin), never an inline one.
set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf -- "$scratch"' EXIT
venv=${K8S_VALIDATE_VENV:-${CARGO_TARGET_DIR:-$repo/target}/k8s-validate-venv}
readonly version=1.37.0 # of kubernetes-validate; also the newest schema it ships
readonly oldest=1.31.0

if [[ ! -x $venv/bin/kubernetes-validate ]] ||
	[[ $("$venv/bin/pip" show kubernetes-validate 2>/dev/null | sed -n 's/^Version: //p') != "$version" ]]; then
	echo "k8s-validate: installing kubernetes-validate==$version into $venv"
	python3 -m venv "$venv"
	"$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
fi

manifests=("$repo"/deploy/k8s/*.yaml)
for k8s in "$oldest" "$version"; do
	"$venv/bin/kubernetes-validate" --strict --quiet -k "$k8s" "${manifests[@]}"
	echo "k8s-validate: ${#manifests[@]} files valid against Kubernetes $k8s (strict)"
done

"$venv/bin/python" - "${manifests[@]}" <<'EOF'
import re
import sys

import yaml

docs = [d for path in sys.argv[1:] for d in yaml.safe_load_all(open(path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
errors = []


def check(ok, message):
    if not ok:
        errors.append(message)


def selects(selector, labels):
    return all(labels.get(k) == v for k, v in selector.items())


for name, sts in by_kind.get("StatefulSet", {}).items():
    spec = sts["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"]["labels"]
    check(selects(spec["selector"]["matchLabels"], labels),
          f"statefulset/{name}: selector does not match the pod template's labels")
    headless = by_kind.get("Service", {}).get(spec["serviceName"])
    check(headless is not None, f"statefulset/{name}: no Service {spec['serviceName']}")
    if headless:
        check(headless["spec"].get("clusterIP") == "None",
              f"service/{spec['serviceName']}: the governing Service must be headless")
        check(headless["spec"].get("publishNotReadyAddresses") is True,
              f"service/{spec['serviceName']}: peers must resolve before they are ready")
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            check(volume["configMap"]["name"] in by_kind.get("ConfigMap", {}),
                  f"statefulset/{name}: no ConfigMap {volume['configMap']['name']}")
    start = spec.get("ordinals", {}).get("start", 0)
    check(start >= 1, f"statefulset/{name}: ordinals.start must be >= 1 (node ids are positive)")
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for container in pod["containers"]:
        env = {e["name"]: e for e in container.get("env", [])}
        secret_mounts = {m["mountPath"].rstrip("/"): m for m in container.get("volumeMounts", [])
                         if "secret" in volumes.get(m["name"], {})}
        for key in ("BROKER_SECURITY_CLUSTER_SECRET_FILE", "BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE"):
            path = env.get(key, {}).get("value", "")
            mount = secret_mounts.get(path.rsplit("/", 1)[0])
            check(mount is not None, f"statefulset/{name}: {key} ({path!r}) is not a file of a mounted Secret")
            if mount:
                check(mount.get("readOnly") is True, f"statefulset/{name}: {mount['name']} must be mounted readOnly")
                secret = volumes[mount["name"]]["secret"]
                check(secret.get("defaultMode") == 0o400,
                      f"statefulset/{name}: Secret volume {mount['name']} needs defaultMode 0400")
        for e in env.values():
            check("secretKeyRef" not in e.get("valueFrom", {}),
                  f"statefulset/{name}: {e['name']} takes a Secret value into the environment; mount it as a file")
        check(env.get("BROKER_NODE_ID", {}).get("valueFrom", {}).get("fieldRef", {}).get("fieldPath")
              == "metadata.labels['apps.kubernetes.io/pod-index']",
              f"statefulset/{name}: BROKER_NODE_ID must come from the pod index")
        peers = env.get("BROKER_PEERS", {}).get("value", "")
        expected = {i: f"{name}-{i}.{spec['serviceName']}" for i in range(start, start + spec["replicas"])}
        found = {int(m.group(1)): m.group(2) for m in re.finditer(r"(\d+)=http://([^.:]+\.[^.:]+)", peers)}
        check(found == expected, f"statefulset/{name}: BROKER_PEERS names {found}, the pods are {expected}")
        check(container.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/ready",
              f"statefulset/{name}: readiness must probe /ready")
    for kind in ("Service", "PodDisruptionBudget"):
        for other, obj in by_kind.get(kind, {}).items():
            selector = obj["spec"]["selector"]
            selector = selector.get("matchLabels", selector)
            check(selects(selector, labels), f"{kind.lower()}/{other}: selects no pod of statefulset/{name}")

check("StatefulSet" in by_kind, "no StatefulSet in deploy/k8s")
if errors:
    print("\n".join(f"k8s-validate: {e}" for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"k8s-validate: cross-references hold ({len(docs)} resources)")
EOF

# systemd-analyze verify wants the unit's ExecStart binary and the targets it
# names; a scratch root holds a stand-in binary and the host's own units. It only
# warns (exit 0) about unknown keys and bad values, so any output fails.
if command -v systemd-analyze >/dev/null; then
	root=$scratch/root
	mkdir -p "$root/usr/local/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
	cp /bin/true "$root/usr/local/bin/broker"
	cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
	cp "$repo/deploy/systemd/broker.service" "$root/etc/systemd/system/"
	if ! out=$(systemd-analyze verify --root="$root" "$root/etc/systemd/system/broker.service" 2>&1) || [[ -n $out ]]; then
		echo "$out" >&2
		echo "systemd-validate: deploy/systemd/broker.service has problems" >&2
		exit 1
	fi
	echo "systemd-validate: deploy/systemd/broker.service verified"
else
	echo "systemd-validate: skipped: systemd-analyze is not installed (apt-get install systemd)"
fi

if docker compose version >/dev/null 2>&1; then
	compose=(docker compose)
elif command -v docker-compose >/dev/null; then
	compose=(docker-compose)
else
	compose=()
fi
if ((${#compose[@]})); then
	mkdir -p "$scratch/secrets"
	echo "validate-secret-not-for-use-0123456789" >"$scratch/secrets/cluster-secret"
	echo "mq_admin_validate-not-for-use-0123456789" >"$scratch/secrets/admin-token"
	BROKER_SECRETS_DIR=$scratch/secrets "${compose[@]}" --file "$repo/deploy/docker-compose.yml" config >"$scratch/compose.yml"
	python3 - "$scratch/compose.yml" <<'EOF'
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
errors = []
wanted = {"BROKER_SECURITY_CLUSTER_SECRET_FILE": "cluster_secret",
          "BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE": "admin_token"}
for name, service in config["services"].items():
    env = service.get("environment", {})
    mounted = {s["source"] if isinstance(s, dict) else s for s in service.get("secrets", [])}
    for key, secret in wanted.items():
        if env.get(key) != f"/run/secrets/{secret}" or secret not in mounted:
            errors.append(f"{name}: {key} must name the mounted Compose secret /run/secrets/{secret}")
    if "BROKER_CLUSTER_SECRET" in env or service.get("env_file"):
        errors.append(f"{name}: the secret must come from a file, not the environment")
for secret in wanted.values():
    if "file" not in config.get("secrets", {}).get(secret, {}):
        errors.append(f"secrets.{secret}: must be a file (deploy/make-secrets.sh)")
if errors:
    sys.exit("\n".join(f"compose-validate: {e}" for e in errors))
EOF
	echo "compose-validate: deploy/docker-compose.yml is valid; every node reads its credentials from Compose secrets"
else
	echo "compose-validate: skipped: Compose is not installed"
fi

"$venv/bin/python" - "$repo/deploy/prometheus/prometheus.yml" <<'EOF'
import sys

import yaml

config = yaml.safe_load(open(sys.argv[1]))
jobs = [j for j in config.get("scrape_configs", []) if j.get("job_name") == "broker"]
auth = jobs[0].get("authorization", {}) if len(jobs) == 1 else {}
if auth.get("type", "Bearer") != "Bearer" or not auth.get("credentials_file") or "credentials" in auth:
    sys.exit(f"prometheus-validate: the broker job must send a bearer token from a credentials_file: {jobs}")
print("prometheus-validate: deploy/prometheus/prometheus.yml scrapes with a bearer credentials file")
EOF
