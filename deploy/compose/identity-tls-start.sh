#!/bin/sh
# Entrypoint of the identity-tls container (docker-compose.yml): writes the TLS keystore from
# the environment to the container's tmpfs (the root file system is read-only, and no key file
# sits on the host in a form another user could read), then runs nginx in the foreground.
#   IKD_IDENTITY_TLS_KEYSTORE  PEM: key, certificate (DNS:identity-tls), CA
set -eu
umask 077
[ -n "${IKD_IDENTITY_TLS_KEYSTORE:-}" ] || {
  echo "identity-tls-start: set IKD_IDENTITY_TLS_KEYSTORE (deploy/compose/make-secrets.sh)" >&2
  exit 1
}
mkdir -p /tmp/tls
printf '%s\n' "$IKD_IDENTITY_TLS_KEYSTORE" >/tmp/tls/identity-tls.pem
unset IKD_IDENTITY_TLS_KEYSTORE
exec nginx -e /dev/stderr -c /etc/ikd/identity-tls.conf -g 'daemon off;'
