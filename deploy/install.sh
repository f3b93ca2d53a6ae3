#!/usr/bin/env bash
# Installs fanaudit into DESTDIR under PREFIX: the binary, the systemd unit,
# the logrotate snippet, and the example config as /etc/fanaudit/config.toml
# unless one exists already. Called by `make install`; safe to run again.
#
# usage: install.sh DESTDIR PREFIX BIN
set -euo pipefail
# Modes below are explicit; this keeps the parents install -d creates at 0755.
umask 022

if [ $# -ne 3 ]; then
	echo "usage: $0 DESTDIR PREFIX BIN" >&2
	exit 2
fi
destdir=${1%/}
prefix=${2%/}
bin=$3
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)

case "$prefix" in
/*) ;;
*) echo "install.sh: PREFIX must be absolute, got '$prefix'" >&2; exit 2 ;;
esac
if [ ! -x "$bin" ]; then
	echo "install.sh: binary '$bin' missing or not executable (run make build)" >&2
	exit 1
fi

# systemd and logrotate look in /etc and in PREFIX/lib/systemd/system only for
# /usr and /usr/local; the config path is the binary's default, not PREFIX-relative.
bindir=$prefix/bin
unitdir=$prefix/lib/systemd/system
docdir=$prefix/share/doc/fanaudit

install -d -m 0755 "$destdir$bindir" "$destdir$unitdir" "$destdir$docdir" "$destdir/etc/logrotate.d"
install -d -m 0750 "$destdir/etc/fanaudit" "$destdir/var/log/fanaudit" "$destdir/var/lib/fanaudit"

install -m 0755 "$bin" "$destdir$bindir/fanaudit"

tmp=$(mktemp)
trap 'rm -f "$tmp"' EXIT
sed "s#/usr/local/bin/fanaudit#$bindir/fanaudit#g" "$here/systemd/fanaudit.service" >"$tmp"
install -m 0644 "$tmp" "$destdir$unitdir/fanaudit.service"

install -m 0644 "$here/logrotate/fanaudit" "$destdir/etc/logrotate.d/fanaudit"

# Always refresh the example, so an upgrade can be diffed against the
# config in use; never touch the config in use.
install -m 0644 "$top/config.toml.example" "$destdir$docdir/config.toml.example"
if [ -e "$destdir/etc/fanaudit/config.toml" ]; then
	echo "install.sh: keeping existing $destdir/etc/fanaudit/config.toml (new example in $destdir$docdir/config.toml.example)"
else
	install -m 0640 "$top/config.toml.example" "$destdir/etc/fanaudit/config.toml"
fi
install -m 0644 "$top/docs/operations.md" "$destdir$docdir/operations.md"

if [ -z "$destdir" ]; then
	echo "install.sh: installed; now: systemctl daemon-reload && systemctl enable --now fanaudit"
fi
