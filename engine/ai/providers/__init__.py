"""Model providers behind one small interface each: chat (streaming) and embeddings."""
