"""The library as users run it: examples, docs, a browser, load, several processes, clusters."""
