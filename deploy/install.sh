#!/usr/bin/env bash
# Install (or upgrade) sequencer as a systemd service on a Debian or Ubuntu host.
#
#   sudo deploy/install.sh [--operator USER]... [PROJECT]
#
# PROJECT is what pip installs: a source folder, a wheel or an sdist (default: this repo).
# --operator USER adds USER to the `sequencer` group, so they can run the CLI (enroll,
# status ...) on the service's database without root (they log in again to pick it up).
# Safe to run again: it upgrades the program and the unit file, and never overwrites
# /etc/sequencer/sequencer.yaml, /etc/sequencer/sequences or any password file; a second
# run with the same arguments changes nothing else.
# See docs/deploy.md for what each step is for.
#
# The paths can be moved (to try the script in a scratch folder, say) with SEQUENCER_PREFIX,
# SEQUENCER_ETC, SEQUENCER_STATE, SEQUENCER_UNIT and the user with SEQUENCER_USER; the unit
# itself names the defaults, the example config follows the moved ones. SEQUENCER_PYTHON is
# the interpreter the virtual environment is made from (default: python3 on root's PATH).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"

say() { printf '==> %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }
# TEXT as the replacement of a sed s|...|...| command.
sed_text() { local t=${1//\\/\\\\}; t=${t//&/\\&}; printf '%s' "${t//|/\\|}"; }

OPERATORS=()
SOURCE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --operator) [ $# -ge 2 ] || die "--operator needs a user name"; OPERATORS+=("$2"); shift 2 ;;
        --operator=*) OPERATORS+=("${1#--operator=}"); shift ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see: $0 --help)" ;;
        *) [ -z "$SOURCE" ] || die "one PROJECT only (got $SOURCE and $1)"; SOURCE="$1"; shift ;;
    esac
done
SOURCE="${SOURCE:-$REPO}"

PREFIX="${SEQUENCER_PREFIX:-/opt/sequencer}"
VENV="$PREFIX/venv"
ETC="${SEQUENCER_ETC:-/etc/sequencer}"
STATE="${SEQUENCER_STATE:-/var/lib/sequencer}"
UNIT="${SEQUENCER_UNIT:-/etc/systemd/system/sequencer.service}"
SERVICE_USER="${SEQUENCER_USER:-sequencer}"
PYTHON="${SEQUENCER_PYTHON:-python3}"
for path in "$PREFIX" "$ETC" "$STATE" "$UNIT"; do
    case "$path" in /*) ;; *) die "$path: the SEQUENCER_* paths must be absolute" ;; esac
done

[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 $*)"
for user in "${OPERATORS[@]}"; do
    getent passwd "$user" >/dev/null || die "--operator $user: no such user"
done
# An existing config means this is an upgrade: its database is migrated below.
upgrading=no
[ -e "$ETC/sequencer.yaml" ] && upgrading=yes
[ -e "$SOURCE" ] || die "$SOURCE does not exist (give a project folder, wheel or sdist)"
for f in "$HERE/sequencer.service" "$HERE/sequencer.yaml"; do
    [ -f "$f" ] || die "$f is missing; run this script from a checkout of the project"
done
command -v "$PYTHON" >/dev/null || die "$PYTHON is not installed (apt-get install python3)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || die "sequencer needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)"

# What we create is world-readable unless said otherwise (the program, the unit);
# /etc/sequencer is tightened explicitly below.
umask 022

# 1. The service user: a system account with no login shell and no password.
if ! getent group "$SERVICE_USER" >/dev/null; then
    say "creating group $SERVICE_USER"
    groupadd --system "$SERVICE_USER"
fi
if ! getent passwd "$SERVICE_USER" >/dev/null; then
    say "creating user $SERVICE_USER"
    useradd --system --gid "$SERVICE_USER" --home "$STATE" --no-create-home \
        --shell /usr/sbin/nologin --comment "sequencer email follow-up daemon" "$SERVICE_USER"
fi

# 2. The program, in its own virtual environment, owned by root (the service cannot
#    modify its own code).
if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV"
    mkdir -p "$PREFIX"
    if ! "$PYTHON" -m venv "$VENV"; then
        # Debian and Ubuntu ship venv's pip bootstrap separately.
        rm -rf "$VENV"
        if command -v apt-get >/dev/null; then
            say "installing python3-venv"
            apt-get update -qq
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            "$PYTHON" -m venv "$VENV"
        else
            die "$PYTHON -m venv failed; install your distribution's venv package"
        fi
    fi
fi
# The venv's python is a link to the interpreter it was made from. One under /root (pyenv,
# a hand-built Python) installs fine but the service user cannot run it: the unit would
# fail at every start with "Permission denied". Say so now.
if ! (cd / && runuser -u "$SERVICE_USER" -- "$VENV/bin/python" -c '') 2>/dev/null; then
    die "$SERVICE_USER cannot run $VENV/bin/python ($(readlink -f "$VENV/bin/python"): a folder
above it is closed to other users). Make the venv from the system's Python:
  rm -rf $VENV && SEQUENCER_PYTHON=/usr/bin/python3 $0 ${OPERATORS[*]/#/--operator } $SOURCE"
fi
say "installing $SOURCE into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/pip" install --quiet --disable-pip-version-check --upgrade "$SOURCE"
"$VENV/bin/sequencer" --help >/dev/null || die "$VENV/bin/sequencer does not run"
if [ -f "$REPO/docs/deploy.md" ]; then
    install -D -m 0644 "$REPO/docs/deploy.md" "$PREFIX/docs/deploy.md"
fi

# 3. Configuration: root owns it, the service can read it (group), nobody else can.
#    Never overwritten: a reinstall keeps your settings and sequences.
install -d -m 0750 -o root -g "$SERVICE_USER" "$ETC"
if [ ! -e "$ETC/sequencer.yaml" ]; then
    say "writing the example config to $ETC/sequencer.yaml (edit it)"
    # Its database and sequences in the moved folders, when they are moved.
    sed -e "s|^database: sqlite:///var/lib/sequencer/|database: sqlite://$(sed_text "$STATE")/|" \
        -e "s|^sequences: /etc/sequencer/|sequences: $(sed_text "$ETC")/|" \
        "$HERE/sequencer.yaml" > "$ETC/.sequencer.yaml.new"
    install -m 0640 -o root -g "$SERVICE_USER" "$ETC/.sequencer.yaml.new" "$ETC/sequencer.yaml"
    rm -f "$ETC/.sequencer.yaml.new"
else
    say "keeping the existing $ETC/sequencer.yaml"
fi
if [ ! -e "$ETC/sequences" ]; then
    if [ -d "$REPO/sequences" ]; then
        say "copying the example sequences to $ETC/sequences"
        cp -R "$REPO/sequences" "$ETC/sequences"
    else
        install -d "$ETC/sequences"
    fi
    chown -R "root:$SERVICE_USER" "$ETC/sequences"
    find "$ETC/sequences" -type d -exec chmod 0750 {} +
    find "$ETC/sequences" -type f -exec chmod 0640 {} +
else
    say "keeping the existing $ETC/sequences"
fi

# 4. Secrets: read by systemd (root) through LoadCredential=/EnvironmentFile=, never by the
#    service user directly, so root-only.
for secret in "$ETC"/*_password "$ETC/sequencer.env"; do
    if [ -f "$secret" ]; then
        chown root:root "$secret"
        chmod 0600 "$secret"
    fi
done

# 5. The state directory, shared with the operators: owner sequencer, group sequencer, mode
#    2770 (the setgid bit gives every file made there the group). systemd sets the same from
#    StateDirectory=/StateDirectoryMode= at each start; creating it now lets an operator
#    enroll before the first start. Files an older version made private (0600, UMask=0077)
#    are opened to the group once; later ones are made so by UMask=0007.
install -d -m 2770 -o "$SERVICE_USER" -g "$SERVICE_USER" "$STATE"
find "$STATE" -mindepth 1 -maxdepth 1 -type f -user "$SERVICE_USER" \
    \( ! -group "$SERVICE_USER" -o ! -perm -0660 \) \
    -exec chgrp "$SERVICE_USER" {} + -exec chmod g+rw {} +

# 6. Operators: members of the group may run the CLI on the database without root.
for user in "${OPERATORS[@]}"; do
    if id -nG "$user" | tr ' ' '\n' | grep -qx "$SERVICE_USER"; then
        say "$user is already in the $SERVICE_USER group"
    else
        say "adding $user to the $SERVICE_USER group (effective at their next login)"
        usermod -aG "$SERVICE_USER" "$user"
    fi
done

# 7. The database, on an upgrade: brought to this version's schema, keeping every contact
#    (a no-op when it is current). As the service user, from its state directory, with its
#    umask, so what it writes (a SQLite backup beside the database) is as the service's own.
#    The running daemon keeps the previous version until it is restarted (next steps).
# A SQLite database not made yet (the service never started) is nothing to migrate: the
# first start makes it. (Migrating would make it now, and a second run would not be a no-op.)
if [ "$upgrading" = yes ] && [ "$(cd "$STATE" && "$VENV/bin/python" - "$ETC/sequencer.yaml" \
        2>/dev/null <<'PY'
import sys
from pathlib import Path

from sequencer.config import load_settings
from sequencer.store.db import sqlite_path

path = sqlite_path(load_settings(Path(sys.argv[1])).database)
print("none" if path is not None and not path.exists() else "some")
PY
)" = none ]; then
    say "no database yet: nothing to migrate"
    upgrading=no
fi
if [ "$upgrading" = yes ]; then
    say "migrating the database (sequencer migrate)"
    if ! (cd "$STATE" && umask 007 && runuser -u "$SERVICE_USER" -- \
            "$VENV/bin/sequencer" migrate --config "$ETC/sequencer.yaml"); then
        die "the database migration failed (see above); the database is as it was before the
failed step. Fix the cause, then run:
  (cd $STATE && runuser -u $SERVICE_USER -- $VENV/bin/sequencer migrate --config $ETC/sequencer.yaml)"
    fi
fi

# 8. The unit. Local changes belong in `systemctl edit sequencer` (a drop-in), which this
#    leaves alone.
unit_changed=yes
if cmp -s "$HERE/sequencer.service" "$UNIT"; then
    unit_changed=no
    say "$UNIT is up to date"
else
    say "installing $UNIT"
    install -D -m 0644 "$HERE/sequencer.service" "$UNIT"
fi
if [ -d /run/systemd/system ]; then
    [ "$unit_changed" = no ] || systemctl daemon-reload
    running=$(systemctl is-active sequencer 2>/dev/null || true)
else
    say "systemd is not running here: skipped daemon-reload"
    running=unknown
fi

missing=()
for secret in smtp_password imap_password; do
    [ -s "$ETC/$secret" ] || missing+=("$secret")
done

cat <<EOF

sequencer is installed: $("$VENV/bin/pip" show sequencer-followup 2>/dev/null | sed -n 's/^Version: /version /p')

Next steps (as root):
EOF
if [ "${#missing[@]}" -gt 0 ]; then
    cat <<EOF
  1. Write the mailbox passwords (typed, not echoed; files readable by root only):
       sh -c 'umask 077; systemd-ask-password "SMTP password:" > $ETC/smtp_password'
       sh -c 'umask 077; systemd-ask-password "IMAP password:" > $ETC/imap_password'
EOF
else
    echo "  1. Passwords: $ETC/smtp_password and $ETC/imap_password are in place (mode 0600)."
fi
cat <<EOF
  2. Edit $ETC/sequencer.yaml (mailbox addresses, servers) and the sequences in $ETC/sequences.
  3. Check the settings and the sequences:
       CREDENTIALS_DIRECTORY=$ETC $VENV/bin/sequencer check --config $ETC/sequencer.yaml
EOF
if [ "$running" = active ]; then
    cat <<EOF
  4. The service is running the previous version; restart it to use this one:
       systemctl restart sequencer
EOF
else
    cat <<EOF
  4. Start it now and at every boot:
       systemctl enable --now sequencer
EOF
fi
cat <<EOF
  5. Watch the logs (one JSON object per line; apt-get install jq):
       journalctl -u sequencer -o cat -f | jq
     After editing sequences: systemctl reload sequencer
  6. Let a person run enroll, status ... without root (they log in again afterwards):
       $0 --operator alice        (or: usermod -aG $SERVICE_USER alice)
     then, as alice: $VENV/bin/sequencer status --config $ETC/sequencer.yaml

More: $PREFIX/docs/deploy.md
EOF
