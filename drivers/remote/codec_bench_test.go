package remote

import "testing"

// BenchmarkCodecApply: encoding and decoding one 4096-op segment, per op.
func BenchmarkCodecApply(b *testing.B) {
	adds, _ := benchOps()
	seg := adds[:applySegmentMax]
	var e enc
	var q request
	b.Run("encode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			e.b = e.b[:0]
			e.applyReq(1, false, false, benchBatch, 0, seg)
		}
		b.ReportMetric(float64(len(e.b))/float64(len(seg)), "bytes/op")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(seg)), "ns/rule")
	})
	b.Run("decode", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			if err := decodeRequest(msgApply, 1, e.b[msgHeaderLen:], &q); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(seg)), "ns/rule")
	})
}
