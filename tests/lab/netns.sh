#!/usr/bin/env bash
# Role: manual helper for the network lab of tests/lab_e2e.rs (tests/support/lab.rs).
#   tests/lab/netns.sh list    the lab's namespaces (iclab-*) and what runs in them
#   tests/lab/netns.sh clean   kill what runs in them and delete them (bridge, veths, qdiscs
#                              and nft tables live inside and go with them)
# The tests clean up by themselves (and remove leftovers of dead runs); this is for a run that
# was SIGKILLed, or to look at a lab while a test runs. Needs root.
set -u
prefix=iclab-
spaces() { ip netns list | awk '{print $1}' | grep "^$prefix" || true; }
case "${1:-list}" in
  list)
    for ns in $(spaces); do echo "$ns: pids $(ip netns pids "$ns" | tr '\n' ' ')"; done ;;
  clean)
    for ns in $(spaces); do
      for pid in $(ip netns pids "$ns"); do kill -KILL "$pid" || echo "cannot kill $pid in $ns" >&2; done
      ip netns del "$ns" || echo "cannot delete namespace $ns" >&2
    done
    left=$(spaces); [ -z "$left" ] || { echo "still there: $left" >&2; exit 1; } ;;
  *) echo "usage: $0 list|clean" >&2; exit 2 ;;
esac
