#!/usr/bin/env bash
#
# make-secrets.sh — the credentials of a deployed cluster, as files:
#
#   deploy/make-secrets.sh [--owner USER[:GROUP]] [DIR]
#                          DIR: $BROKER_SECRETS_DIR, else deploy/secrets
#
#   DIR/cluster-secret   the secret nodes present to each other (/internal/)
#   DIR/admin-token      the bootstrap admin token (admin on everything): clients
#                        send it as `Authorization: Bearer`, or better make users
#                        with it (`mqctl user create`) and keep it for emergencies
#
# Each holds 32 random bytes as hex (the token with the prefix mq_admin_), is
# created 0600 and never readable by others, not even while it is written, and is
# kept when it exists: run it again and nothing changes. The same two files serve
# every node: docker-compose.yml mounts them as Compose secrets, `kubectl create
# secret generic broker-credentials --from-file=...` puts them in a Secret, and
# systemd/broker.service loads them with LoadCredential=.
#
# Compose mounts the files themselves into the containers, where the broker runs as
# user 10001: run this as root (or with sudo) and the files are given to that user
# (0400). --owner names another owner, e.g. `--owner root` for the systemd unit
# (systemd hands the service its own copy). As another user than root the files
# stay yours (0600); chown them before `docker-compose up`, or the nodes cannot
# read them and exit with a configuration error.
set -euo pipefail

readonly SECRET_BYTES=32
owner=10001:10001 # the user of the container image (deploy/Dockerfile)
if [[ ${1:-} == --owner ]]; then
	owner=${2:?--owner needs USER[:GROUP]}
	shift 2
fi
dir=${1:-${BROKER_SECRETS_DIR:-$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)/secrets}}

umask 077
mkdir -p -- "$dir"

# new_secret FILE PREFIX — random hex after PREFIX, unless FILE exists. The value
# goes from od to the file: it is in no process's arguments.
new_secret() {
	local file=$1 prefix=$2 tmp
	if [[ -s $file ]]; then
		echo "make-secrets: keeping $file"
		return 0
	fi
	tmp=$(mktemp -- "$file.XXXXXX")
	{
		printf '%s' "$prefix"
		od -An -v -tx1 -N"$SECRET_BYTES" /dev/urandom | tr -d ' \n'
		printf '\n'
	} >"$tmp"
	[[ $(wc -c <"$tmp") -eq $((${#prefix} + 2 * SECRET_BYTES + 1)) ]] || {
		rm -f -- "$tmp"
		echo "make-secrets: could not read $SECRET_BYTES random bytes" >&2
		exit 1
	}
	mv -f -- "$tmp" "$file"
	echo "make-secrets: wrote $file"
}

new_secret "$dir/cluster-secret" ""
new_secret "$dir/admin-token" "mq_admin_"
if [[ $EUID -eq 0 ]]; then
	chown "$owner" -- "$dir/cluster-secret" "$dir/admin-token"
	chmod 0400 -- "$dir/cluster-secret" "$dir/admin-token"
else
	echo "make-secrets: not root: $dir/* belong to you (0600); for Compose, give them to the" \
		"containers' user: sudo chown $owner $dir/cluster-secret $dir/admin-token" >&2
fi
