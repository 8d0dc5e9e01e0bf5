#!/usr/bin/env bash
# Installs olla system-wide as a systemd service, from this checkout, as root:
#   sudo scripts/install.sh            # olla.service listens itself (OLLA_HOST, default loopback)
#   sudo scripts/install.sh --socket   # olla.socket: systemd listens on 127.0.0.1:11435
# Makes the system user `olla`, its state in /var/lib/olla (models, API keys), olla in
# /opt/olla/venv (llama-cpp-python built from source, as scripts/setup.sh does), `olla` on the
# PATH, /etc/olla/olla.env for settings, and the units in /etc/systemd/system.
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/opt/olla}
UNITS=${UNITS:-/etc/systemd/system}

[ "$(id -u)" -eq 0 ] || { echo "install.sh: run as root (sudo scripts/install.sh)" >&2; exit 1; }
command -v systemctl >/dev/null || { echo "install.sh: needs systemd (systemctl)" >&2; exit 1; }

id olla >/dev/null 2>&1 ||
    useradd --system --user-group --home-dir /var/lib/olla --shell /usr/sbin/nologin olla
install -d -m 0750 -o olla -g olla /var/lib/olla
install -d -m 0755 "$PREFIX" /etc/olla
[ -e /etc/olla/olla.env ] || printf '%s\n' "# olla's settings, e.g. OLLA_HOST=0.0.0.0:11435 (add keys first: olla keys add NAME)" \
    > /etc/olla/olla.env

VENV="$PREFIX/venv" scripts/setup.sh
install -m 0644 README.md "$PREFIX/README.md"
ln -sf "$PREFIX/venv/bin/olla" /usr/local/bin/olla

install -m 0644 systemd/olla.service systemd/olla.socket "$UNITS/"
systemctl daemon-reload
if [ "${1:-}" = "--socket" ]; then
    systemctl enable --now olla.socket
else
    systemctl enable --now olla.service
fi
echo "olla installed: systemctl status olla; API keys: sudo -u olla OLLA_HOME=/var/lib/olla olla keys add NAME"
