#!/bin/sh
# One-shot (compose service `minio-init`, image minio/mc): the raw-object bucket and one
# least-privilege credential per service that touches it. Idempotent: safe on every `up`.
#   ingest API : put/get/delete under raw/ (delete only for `exchange gc-orphans`)
#   tokenizer  : get under raw/ (de-identification by reference)
# The root credential stays with minio and this job; no platform service receives it.
set -eu

: "${MINIO_ROOT_USER:?}" "${MINIO_ROOT_PASSWORD:?}"
: "${INGEST_S3_ACCESS_KEY_ID:?}" "${INGEST_S3_SECRET_ACCESS_KEY:?}"
: "${TOKENIZER_S3_ACCESS_KEY_ID:?}" "${TOKENIZER_S3_SECRET_ACCESS_KEY:?}"

BUCKET=raw-objects
mc alias set exchange http://minio:9000 "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null

mc mb --ignore-existing "exchange/$BUCKET"
# Never anonymous: raw payloads are PHI.
mc anonymous set none "exchange/$BUCKET" >/dev/null

grant() {  # grant USER SECRET POLICY
  mc admin policy create exchange "$3" "/deploy/minio/$3.policy.json" >/dev/null
  mc admin user add exchange "$1" "$2" >/dev/null
  # `attach` refuses a policy that is already attached; that is the state we want.
  if ! mc admin policy attach exchange "$3" --user "$1" >/dev/null 2>&1; then
    case "$(mc admin user info exchange "$1")" in
      *"$3"*) ;;
      *) echo "minio-init: could not attach policy $3" >&2; exit 1 ;;
    esac
  fi
  echo "minio-init: policy $3 attached to its service user"
}

grant "$INGEST_S3_ACCESS_KEY_ID" "$INGEST_S3_SECRET_ACCESS_KEY" raw-objects-ingest
grant "$TOKENIZER_S3_ACCESS_KEY_ID" "$TOKENIZER_S3_SECRET_ACCESS_KEY" raw-objects-tokenizer
echo "minio-init: bucket $BUCKET ready"
