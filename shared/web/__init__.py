"""The HTTP plumbing of ingress and the notifier: the error envelope, the request edge, the app and server."""
