"""Every store through the middleware (the contract), each store's own tests, faults and races."""
