"""Download stage: the crawl's listing, fetching WET segments (retries, staging), the WET reader."""
