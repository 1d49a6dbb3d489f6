"""Search over exported article vectors: the FAISS export and its edits (`export`), index kinds and filtered search
(`ann`, `filters`), stored photo vectors (`store`), the loaded index (`index`) with neighbour expansion
(`expansion`), re-ranking (`rerank`) and the multi-vector baseline (`multivector`), query files (`queries`), Parquet export (`parquet`) and the HTTP service
(`service`)."""
