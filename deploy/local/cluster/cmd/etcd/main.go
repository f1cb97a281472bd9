// Command etcd is the upstream etcd server, built from its Go module for the kposture local
// environment (DESIGN.md section 5). It mirrors go.etcd.io/etcd/v3's main package.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
