"""The offline sample snapshot: a generated Common Crawl mirror and everything it needs."""
