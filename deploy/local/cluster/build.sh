#!/usr/bin/env bash
# Builds the local environment's Kubernetes binaries (DESIGN.md section 5) from Go modules:
# etcd, kube-apiserver, kube-controller-manager and kube-scheduler from this module, and kwok
# from ./kwok, plus kwok-stages.yaml, the upstream stages that make kwok's fake nodes Ready and
# their pods Running and Ready.
#
# Usage: build.sh OUTPUT_DIR
#
# A no-op when OUTPUT_DIR/.stamp holds the hash of the build inputs (go.mod, go.sum, the Go
# sources and this script), so callers may run it before every start.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:?usage: build.sh OUTPUT_DIR}
binaries=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)

cd "$here"
stamp=$(find . -type f \( -name go.mod -o -name go.sum -o -name '*.go' -o -name build.sh \) \
  | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -d' ' -f1)

up_to_date() {
  [[ -f "$out/.stamp" && "$(cat "$out/.stamp")" == "$stamp" && -f "$out/kwok-stages.yaml" ]] \
    || return 1
  local bin
  for bin in "${binaries[@]}"; do
    [[ -x "$out/$bin" ]] || return 1
  done
}

if up_to_date; then
  echo "up to date: $out"
  exit 0
fi

command -v go >/dev/null || { echo "go is not on PATH; install Go 1.26 or later" >&2; exit 127; }
mkdir -p "$out"
rm -f "$out/.stamp"

# Static binaries, as the upstream release builds are; also spares needing a C compiler.
export CGO_ENABLED=0
# Fail rather than rewrite go.mod or go.sum: they are the pinned, committed versions.
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=readonly"

# The version the binaries report (/version, kubectl version) comes from ldflags, as in
# upstream's hack/lib/version.sh; without them it would read v0.0.0-master.
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
k8s_minor=${k8s_version#v1.}
k8s_minor=${k8s_minor%%.*}
build_date=$(date -u +'%Y-%m-%dT%H:%M:%SZ')
ldflags="-s -w"
for pkg in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
  ldflags+=" -X '$pkg.gitVersion=$k8s_version' -X '$pkg.gitMajor=1'"
  ldflags+=" -X '$pkg.gitMinor=$k8s_minor' -X '$pkg.buildDate=$build_date'"
  ldflags+=" -X '$pkg.gitTreeState=clean'"
done

echo "building etcd and Kubernetes $k8s_version into $out"
# One invocation for all four so that the shared packages compile once.
go build -trimpath -ldflags "$ldflags" -o "$out/" ./cmd/...

echo "building kwok into $out"
(cd kwok && go build -trimpath -ldflags "-s -w" -o "$out/kwok" sigs.k8s.io/kwok/cmd/kwok)

# kwok itself starts with no stages (kwokctl normally supplies them), so ship the upstream
# defaults of the pinned version: node init, node heartbeat through leases, pod ready,
# complete and delete.
kwok_dir=$(cd kwok && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)
stages=(
  kustomize/stage/node/fast/node-initialize.yaml
  kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml
  kustomize/stage/pod/fast/pod-ready.yaml
  kustomize/stage/pod/fast/pod-complete.yaml
  kustomize/stage/pod/fast/pod-delete.yaml
)
{
  for stage in "${stages[@]}"; do
    echo "---"
    cat "$kwok_dir/$stage"
  done
} >"$out/kwok-stages.yaml.tmp"
mv "$out/kwok-stages.yaml.tmp" "$out/kwok-stages.yaml"

# Written last, so that an interrupted build is redone in full next time.
echo "$stamp" >"$out/.stamp"
echo "built: $out"
