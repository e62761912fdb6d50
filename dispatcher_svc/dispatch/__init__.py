"""Per-request dispatch (docs/architecture.md, rules B1-B14).

`events` (what the machine hears) and `actions` (what it asks for) are the vocabulary;
`state` is what it remembers; `machine` is the pure transition function; `driver` runs it
against the registry, the provider links and a clock, given as `ports` (`typing.Protocol`s);
`attempt` turns one attempt's link events into machine events while watching what the
provider does; `speed` measures attempts and remembers which `Accepted` is plausible;
`metrics` holds the counters the driver bumps.
"""
