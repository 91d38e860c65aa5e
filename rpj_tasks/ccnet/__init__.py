"""CCNet stage: paragraph dedup, normalisation, fastText LID, SentencePiece + KenLM perplexity, buckets."""
