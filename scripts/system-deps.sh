#!/usr/bin/env bash
# Installs the Debian packages the integration tests use, only when missing.
set -euo pipefail
need=()
command -v gpg >/dev/null 2>&1 || need+=(gnupg)
command -v dirmngr >/dev/null 2>&1 || need+=(dirmngr)                 # WKD lookups in tests
[ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # dirmngr's trust file
command -v unshare >/dev/null 2>&1 || need+=(util-linux)              # WKD test namespaces
command -v ip >/dev/null 2>&1 || need+=(iproute2)
[ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
