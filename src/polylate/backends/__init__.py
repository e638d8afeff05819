"""Scale-out beyond one machine: ColBERT token vectors stored and searched in an existing
distributed vector engine (``qdrant``: sharded, replicated, native multi-vector MaxSim)."""
