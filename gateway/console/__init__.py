"""The clerks' console: French web pages for the greffe and administrators, on the API's server."""
