"""HTTP front end (Klein). Routes parse, authenticate, call the service layer, render JSON."""
