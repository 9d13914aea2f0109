// Runnable examples for the Go client (clients/go); see README.md.
module flow.local/examples/go

go 1.24.0

require (
	flow.local/clients/go v0.0.0
	flow.local/gen/go v0.0.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.49.0 // indirect
	golang.org/x/sys v0.40.0 // indirect
	golang.org/x/text v0.33.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260120221211-b8f7ae30c516 // indirect
	google.golang.org/grpc v1.80.0 // indirect
)

// Both live in this repository and are never fetched.
replace (
	flow.local/clients/go => ../../clients/go
	flow.local/gen/go => ../../gen/go
)
