#!/usr/bin/env bash
# Installs the Debian packages the gateway needs, only when missing.
#   system-deps.sh run    what running needs (make run, make demo): gpg, openssl
#   system-deps.sh test   that plus what the integration tests use (the default)
set -euo pipefail
what="${1:-test}"
case "$what" in run|test) ;; *) echo "usage: $0 [run|test]" >&2; exit 2 ;; esac
need=()
command -v gpg >/dev/null 2>&1 || need+=(gnupg)                       # court keys, gpg-agent
command -v gpg-agent >/dev/null 2>&1 || need+=(gpg-agent)             # decrypting (greffe side)
command -v gpgconf >/dev/null 2>&1 || need+=(gpgconf)                 # stopping gpg-agents
command -v openssl >/dev/null 2>&1 || need+=(openssl)                 # `gateway init`: DKIM key
if [ "$what" = test ]; then
  command -v dirmngr >/dev/null 2>&1 || need+=(dirmngr)                 # WKD lookups in tests
  [ -f /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # dirmngr's trust file
  command -v unshare >/dev/null 2>&1 || need+=(util-linux)              # WKD test namespaces
  command -v ip >/dev/null 2>&1 || need+=(iproute2)
  [ -x /usr/sbin/dovecot ] || need+=(dovecot-imapd)
  [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
  [ -x /usr/bin/chromium ] || need+=(chromium)                         # console browser tests
fi
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "missing system packages: ${need[*]} (run as root, or install them)" >&2
    exit 1
  fi
  echo "installing system packages: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
