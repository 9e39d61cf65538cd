"""The knowledge base: text extraction, chunking, embeddings and the hybrid (BM25 + vector) index."""
