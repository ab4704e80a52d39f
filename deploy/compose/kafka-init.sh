#!/usr/bin/env bash
# The `init` job of docker-compose.yml (ops image, as the admin principal): the project's
# topics, every component's SCRAM user and least-privilege ACLs, before any service starts.
#
#   kafka-init.sh AGENCY...        e.g. kafka-init.sh polres-cirebon bank-bjb
#
# Principals: identity, audit, gateway-<agency> and agency-<agency> per agency; the password of
# principal P is IKD_KAFKA_<P>_PASSWORD (upper case, - -> _), e.g.
# IKD_KAFKA_GATEWAY_BANK_BJB_PASSWORD. admin and broker are created when the broker formats its
# storage (deploy/compose/kafka-start.sh). Every step is idempotent: the job runs on every
# `docker compose up`, so a changed password in .env is applied to the broker then.
set -euo pipefail
umask 077

die() {
  echo "kafka-init: $*" >&2
  exit 1
}

(($#)) || die "usage: kafka-init.sh AGENCY..."
principals=(identity audit)
for agency in "$@"; do
  [[ "$agency" =~ ^[a-z0-9]+(-[a-z0-9]+)*$ ]] || die "'$agency' is not an agency code"
  principals+=("gateway-$agency" "agency-$agency")
done

# `ikdctl kafka users apply` reads one <principal>.password file each (tmpfs, this job only).
users="$(mktemp -d)"
trap 'rm -rf "$users"' EXIT
for principal in "${principals[@]}"; do
  var="IKD_KAFKA_${principal^^}_PASSWORD"
  var="${var//-/_}"
  [[ -n "${!var:-}" ]] || die "set $var (deploy/compose/make-secrets.sh writes it)"
  printf '%s' "${!var}" >"$users/$principal.password"
done

ikdctl topics ensure --agencies "$*"
ikdctl kafka users apply --credentials-dir "$users"
ikdctl kafka acls apply --agencies "$*"
