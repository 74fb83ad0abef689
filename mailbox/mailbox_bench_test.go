package mailbox_test

import (
	"context"
	"testing"

	"spooky/mailbox"
)

func BenchmarkSendReceive(b *testing.B) {
	ctx := context.Background()
	mb := mailbox.New[int, ctl](1, 1)
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		if err := mb.Send(ctx, i); err != nil {
			b.Fatal(err)
		}
		if _, err := mb.Receive(ctx); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSendReceiveParallel(b *testing.B) {
	ctx := context.Background()
	mb := mailbox.New[int, ctl](1024, 1)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for i := 0; pb.Next(); i++ {
			if err := mb.Send(ctx, i); err != nil {
				b.Error(err)
				return
			}
			if _, err := mb.Receive(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
