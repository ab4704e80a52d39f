# Kafka TLS material with OpenSSL 1.1.1+, sourced by deploy/compose/make-secrets.sh and
# deploy/cluster/make-secrets.sh. EC P-256 keys in unencrypted PKCS#8, which is what the
# broker's PEM keystores read.
# shellcheck shell=bash

# kafka_ca DIR: DIR/ca.pem (public: mounted into every container) and DIR/ca.key (mode 600,
# only for issuing certificates). An existing CA is kept: certificates already issued by it stay
# valid, and the clients' trust does not change.
kafka_ca() {
  local dir="$1"
  mkdir -p "$dir"
  if [[ -e "$dir/ca.key" || -e "$dir/ca.pem" ]]; then
    [[ -s "$dir/ca.key" && -s "$dir/ca.pem" ]] || {
      echo "make-secrets: $dir holds half a CA (ca.key and ca.pem go together)" >&2
      return 1
    }
    return 0
  fi
  (set -C && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$dir/ca.key") 2>/dev/null
  (set -C && openssl req -x509 -new -key "$dir/ca.key" -days 3650 -sha256 -out "$dir/ca.pem" \
    -config <(printf '%s\n' '[req]' distinguished_name=dn x509_extensions=ext prompt=no \
      '[dn]' 'O=IKD MPP' 'CN=IKD MPP Kafka CA' \
      '[ext]' basicConstraints=critical,CA:TRUE,pathlen:0 keyUsage=critical,keyCertSign,cRLSign \
      subjectKeyIdentifier=hash))
  chmod 600 "$dir/ca.key"
  chmod 644 "$dir/ca.pem"
}

# kafka_keystore DIR CN SAN USAGE: a PEM keystore on stdout (key, certificate, CA), signed by
# DIR's CA for 825 days. SAN e.g. DNS:kafka,IP:127.0.0.1; USAGE serverAuth or
# serverAuth,clientAuth. CN=controller is the controller listener's principal (super user).
kafka_keystore() {
  local dir="$1" cn="$2" san="$3" usage="$4" key
  key="$(openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)"
  printf '%s\n' "$key"
  openssl req -new -key <(printf '%s\n' "$key") -subj "/O=IKD MPP/CN=$cn" |
    openssl x509 -req -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -days 825 -sha256 \
      -set_serial "0x$(openssl rand -hex 16)" \
      -extfile <(printf '%s\n' basicConstraints=critical,CA:FALSE \
        keyUsage=critical,digitalSignature "extendedKeyUsage=$usage" \
        "subjectAltName=$san") 2>/dev/null
  cat "$dir/ca.pem"
}
