#!/bin/sh
# Two owsync nodes on localhost, one directory each, encrypted:
# a file created on A shows up on B, then its deletion follows.
set -eu
work=$(mktemp -d /tmp/owsync-demo.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
OWSYNC_KEY=$(owsync genkey)
export OWSYNC_KEY
mkdir -p "$work/a" "$work/b"
step() { printf '\n== %s\n' "$*"; }
show() { for n in a b; do printf '   %s: ' "$n"; (cd "$work/$n" && find . -type f | sort | tr '\n' ' '); echo; done; }

owsync listen -H 127.0.0.1 -P "$port" -d "$work/a" -b "$work/a.db" -i '*' 2>"$work/listener.log" &
listener=$!
trap 'kill $listener 2>/dev/null; wait $listener 2>/dev/null; rm -rf "$work"' EXIT
i=0; until grep -q "listening on" "$work/listener.log" 2>/dev/null; do
  i=$((i + 1)); [ $i -lt 100 ] || { cat "$work/listener.log"; exit 1; }; sleep 0.05
done

step "node A listens on 127.0.0.1:$port (dir $work/a); node B connects (dir $work/b)"
printf 'config dnsmasq\n\toption domainneeded 1\n' > "$work/a/dhcp"
echo "created dhcp on A"; show
step "sync"
owsync connect "127.0.0.1:$port" -d "$work/b" -b "$work/b.db" -i '*'
show
cmp "$work/a/dhcp" "$work/b/dhcp" && echo "   B's dhcp is identical to A's"

rm "$work/a/dhcp"
step "deleted dhcp on A; sync"
owsync connect "127.0.0.1:$port" -d "$work/b" -b "$work/b.db" -i '*'
show
[ ! -e "$work/b/dhcp" ] && echo "   dhcp is gone from B too (tombstone propagated)"
step "A's log"
sed 's/^/   /' "$work/listener.log"
