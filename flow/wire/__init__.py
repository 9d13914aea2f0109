"""Pure conversions between the domain and the contract (flowapi.v1). Nothing else in the code
touches generated messages, except the SDK client and flowd's servicers that call these."""
