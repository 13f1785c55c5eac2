// Command etcd is the stock etcd server (go.etcd.io/etcd/server/v3/etcdmain), built through the Go
// module proxy for the test control plane. The etcd root module has replace directives, so it
// cannot be `go install`ed; its server module can, through this one-line wrapper.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
