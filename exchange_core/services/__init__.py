"""Local services harness: real Postgres, SeaweedFS (S3) and Kafka on 127.0.0.1."""
