#!/usr/bin/env bash
# Start Redis and PostgreSQL on this machine when they are not already running.
# Used by scripts/test (and so by CI). Never stops anything.
set -euo pipefail

redis_up() { redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; }
pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing redis-server (Debian package)"
  (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
fi
if ! redis_up; then
  echo "starting Redis on 127.0.0.1:6379"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
  for _ in $(seq 50); do redis_up && break; sleep 0.2; done
fi

if ! command -v pg_ctlcluster >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  echo "installing PostgreSQL (Debian package)"
  (apt-get update -qq && apt-get install -y -qq postgresql) >/dev/null
fi
if ! pg_up; then
  echo "starting PostgreSQL on 127.0.0.1:5432"
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
  for _ in $(seq 100); do pg_up && break; sleep 0.2; done
fi
if pg_up; then
  # The test database, reachable with trust auth (a fresh Debian cluster: create it).
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    su postgres -c "psql -c \"CREATE DATABASE test\"" >/dev/null 2>&1 || true
  fi
fi
redis_up && echo "Redis: up" || { echo "Redis: NOT running" >&2; exit 1; }
pg_up && echo "PostgreSQL: up" || { echo "PostgreSQL: NOT running" >&2; exit 1; }
