#!/usr/bin/env bash
# Builds the real control plane the realkube tests run against (kube-apiserver, etcd) plus helm, from the
# pinned Go modules under tests/realkube/go/, into a cache outside the repo keyed by what was built:
#     ${BKC_REALKUBE_CACHE:-$HOME/.cache/buildkite-controller/realkube}/<key>/bin
# A warm cache makes this a no-op, so CI in a fresh clone on the same machine reuses the binaries; a fresh
# machine builds cold. Prints the bin directory on stdout (everything else goes to stderr).
# Usage: tests/realkube/build.sh [--print-dir]   (--print-dir: only print the directory, build nothing)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# The versions, written down once; the go.mod files under go/ pin the same ones (checked below).
KUBERNETES_VERSION=1.37.2
ETCD_VERSION=3.7.3
HELM_VERSION=3.22.0
# Bump when the recipe below changes what is built (flags, ldflags): the cache key includes it.
RECIPE=1

export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-buildvcs=false
command -v go >/dev/null || { echo "realkube build: no Go toolchain on PATH" >&2; exit 1; }
pinned() {  # pinned <module> <version> <dir>: the go.mod under go/<dir> requires exactly that version
    grep -qE "^\s+$1 v$2( //.*)?\$" "$here/go/$3/go.mod" \
        || { echo "realkube build: go/$3/go.mod does not pin $1 v$2" >&2; exit 1; }
}
pinned k8s.io/kubernetes "$KUBERNETES_VERSION" kube-apiserver
pinned go.etcd.io/etcd/server/v3 "$ETCD_VERSION" etcd
pinned helm.sh/helm/v3 "$HELM_VERSION" helm

go_version="$(go env GOVERSION)"
# The key names the versions and hashes what else decides the output: every pinned module, the toolchain.
digest="$(cat "$here"/go/*/go.mod "$here"/go/*/go.sum | { cat; echo "$go_version"; } | sha256sum | cut -c1-12)"
key="k8s-$KUBERNETES_VERSION-etcd-$ETCD_VERSION-helm-$HELM_VERSION-$go_version-r$RECIPE-$digest"
cache="${BKC_REALKUBE_CACHE:-$HOME/.cache/buildkite-controller/realkube}"
out="$cache/$key"
if [ "${1:-}" = "--print-dir" ]; then echo "$out/bin"; exit 0; fi

mkdir -p "$cache"
# One builder at a time per cache (two CI runs, or CI and a developer, on one machine).
exec 9>"$cache/.build.lock"
flock 9
if [ -f "$out/complete" ]; then echo "$out/bin"; exit 0; fi

start=$(date +%s)
work="$(mktemp -d "$cache/.build-XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin"
ldflags="-s -w"
kv="k8s.io/component-base/version"
kube_ldflags="$ldflags -X $kv.gitVersion=v$KUBERNETES_VERSION -X $kv.gitMajor=${KUBERNETES_VERSION%%.*}"
kube_ldflags="$kube_ldflags -X $kv.gitMinor=$(echo "$KUBERNETES_VERSION" | cut -d. -f2) -X $kv.gitTreeState=clean"
build() {  # build <module dir> <package> <binary> <ldflags>
    echo "realkube build: $3 ($2)" >&2
    (cd "$here/go/$1" && go build -mod=readonly -trimpath -ldflags="$4" -o "$work/bin/$3" "$2")
}
build etcd go.etcd.io/etcd/server/v3 etcd "$ldflags -X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION"
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver kube-apiserver "$kube_ldflags"
build helm helm.sh/helm/v3/cmd/helm helm "$ldflags -X helm.sh/helm/v3/internal/version.version=v$HELM_VERSION"
"$work/bin/etcd" --version >&2
"$work/bin/kube-apiserver" --version >&2
"$work/bin/helm" version --short >&2
echo "built in $(( $(date +%s) - start ))s with $go_version" > "$work/complete"
rm -rf "$out"
mv "$work" "$out"
trap - EXIT
echo "realkube build: $(cat "$out/complete"), $(du -sh "$out" | cut -f1) in $out" >&2
echo "$out/bin"
