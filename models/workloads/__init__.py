"""What a client trains, one module per workload (`classify`, `esvae`, `dda`) on the interface of
`base`; the registry is :data:`models.WORKLOADS`."""
