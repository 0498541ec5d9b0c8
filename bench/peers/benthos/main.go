// The Benthos peer for `make bench-peers`: Benthos core (redpanda-data/benthos/v4) with only its
// own io and pure components, run with bench/peers/benthos/config.yaml (http_server -> file).
package main

import (
	"context"

	_ "github.com/redpanda-data/benthos/v4/public/components/io"
	_ "github.com/redpanda-data/benthos/v4/public/components/pure"
	"github.com/redpanda-data/benthos/v4/public/service"
)

func main() {
	service.RunCLI(context.Background())
}
