"""GraphQL at /graphql (strawberry): the prediction services, auth and scopes of the REST API."""
