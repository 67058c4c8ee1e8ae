"""Response cache tier: exact and semantic caches on Redis behind one interface; Redis down means bypass."""
