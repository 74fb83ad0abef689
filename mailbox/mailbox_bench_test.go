package mailbox_test

import (
	"context"
	"sync"
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

// BenchmarkHandOff runs separate sender and receiver goroutines, so that
// both sides wait for each other: a small lane keeps senders blocked and an
// empty one keeps receivers waiting. It measures the wake-up paths.
func BenchmarkHandOff(b *testing.B) {
	for _, bc := range []struct {
		name                         string
		capacity, senders, receivers int
	}{
		{"cap1/1x1", 1, 1, 1},
		{"cap16/1x1", 16, 1, 1},
		{"cap4/4x4", 4, 4, 4},
		{"cap1024/4x4", 1024, 4, 4},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ctx := context.Background()
			mb := mailbox.New[int, ctl](bc.capacity, 1)
			total := b.N - b.N%(bc.senders*bc.receivers)
			b.ReportAllocs()
			var wg sync.WaitGroup
			for range bc.receivers {
				wg.Go(func() {
					for range total / bc.receivers {
						if _, err := mb.Receive(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			for range bc.senders {
				wg.Go(func() {
					for i := range total / bc.senders {
						if err := mb.Send(ctx, i); err != nil {
							b.Error(err)
							return
						}
					}
				})
			}
			wg.Wait()
		})
	}
}
