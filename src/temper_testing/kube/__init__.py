"""The fake beside the `Kube` port (`temper.kube.api.Kube`), for tests: `fakeapi.FakeKube`."""
